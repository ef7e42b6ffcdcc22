"""The reference models in PyTorch (QualiCLIP, BPCLIP on CLIP RN50), their prompts, preprocessing,
checkpoints and the model zoo that names them."""
