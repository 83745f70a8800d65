"""L1 data: CIFAR-10 found or fetched and checksummed (fetch), batch files read through an
unpickler that runs no code (safe_pickle, batches), the training set kept as uint8 and
normalised as rows are read (images, normalise), splits and the Dataset (cifar10), and
on-the-fly augmentation (augment). Imports neither backends nor model."""
