"""Training data: synthetic degradations, pristine image sources (folders, bundled photos, dead
leaves) and readers of MOS datasets."""
