"""Vision family: image decoding and preprocessing, quality assessment (so far); classification, detection,
OCR and embeddings to come (issue 7)."""
