"""Reading inputs as they are published: layouts on disk, metadata tables, image containers, the ISIC
hierarchies, label maps and the one vocabulary, class sets, and merging several inputs into one table."""
