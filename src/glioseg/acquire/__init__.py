"""Getting datasets onto disk: downloads, archives, on-disk folders."""
