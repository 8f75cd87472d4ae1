"""Pixels: decoding and preprocessing (hair removal, CLAHE, resize, encode), and the offline augmentation
policies with their exact replay."""
