"""Stage 5, train: stage 1 InfoNCE on clips, stage 2 InfoNCE + MSE, under torchrun; launch backends."""
