"""Views of the data before any training: per-dataset profiles, modality montages, a t-SNE embedding across datasets."""
