"""The science: stimuli, data, the eccentricity-dependent model, training and evaluation."""
