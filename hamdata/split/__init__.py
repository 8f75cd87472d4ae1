"""Groups (lesions, patients, duplicates) that never span splits, and the stratified, canonical and held-out
splits with the leakage audit."""
