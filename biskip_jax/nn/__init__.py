"""The networks: the Bi-Skip generator and the WGAN critic (``models``), their layers, the
convolutions with fast CPU gradients (``conv``) and VGG19 features with their weights."""
