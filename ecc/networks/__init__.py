"""Networks of your own, as examples of the factory interface (ecc/factory.py; README "Your own
network"): each module is one short file with a `make` factory, to copy and change. The
architectures sweep names them by module (`ecc.networks.resnet_small:make`), so their runs' identity
does not depend on where the repository is checked out."""
