"""Stage 4, text: clean and tokenise every clip's captions with the family's text tower."""
