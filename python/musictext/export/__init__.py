"""Stage 7, export: what Navidrome's text service loads ({name}_best_r1.pt + {name}_text_embedder/)."""
