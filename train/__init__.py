"""The PyTorch side: models/ (reference models, prompts, checkpoints, zoo), data/ (degradations,
pristine sources, MOS datasets), the training loops, losses and evaluation at this level, and
storage (the iqart home folder, atomic writes), which every layer may import."""
