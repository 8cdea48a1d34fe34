"""fl-mia: a federated-learning privacy testbed for medical image segmentation."""

__version__ = "0.1.0"
