"""numba kernels: pure functions on NumPy arrays, importing nothing of ``infer``.

Modules (imported on demand, so ``import kernels`` stays cheap):

``kernels.anomaly_features``  raw upload events -> ``float32[N, F]`` features for the anomaly family, with
                              per-user / per-namespace rolling state in bounded arrays (``FeatureState``),
                              so training and serving compute the same features.
``kernels.streaming``         streaming per-series detectors (EW z-score, moving-average deviation) with
                              state arrays indexed by series slot.
``kernels.forecast``          forecasting: seasonal naive, linear trend, ARIMA recursion, normalised windows
                              and gradient-boosting features, backtest errors.
``kernels.image``             image tensors (HWC uint8 -> NCHW float32) and quality measures (sharpness,
                              exposure, noise).
``kernels.detect``            object detection: letterbox geometry, YOLO (v5 and v8 layouts) decoding, batched
                              class-aware non-maximum suppression.
``kernels.ocr``               text detection and recognition: boxes from the DB probability map, CTC decoding.
``kernels.ranking``           the k best of each row, ties to the lower index (search, top-k labels).
``kernels.text``              text: the language identifier's byte automaton and naive Bayes scores, TF-IDF
                              terms and keywords, NMF topic projection.
``kernels._cuda``             ``numba.cuda`` variants, built on first use; ``numba.cuda`` is only imported
                              when a GPU backend is asked for or ``backend="auto"`` meets a large batch on a
                              machine with a CUDA driver.

Every kernel has a plain NumPy/Python reference (``*_reference``) that the tests compare it with.

The kernels are compiled on first call (a few seconds; ``warm_up()`` in each module does it ahead, e.g. at
model load), not cached on disk: numba's cache only notices edits to the file that defines a function, not
to the kernels it calls from another module, and a wheel's site-packages may be read-only.
"""

__all__ = ["anomaly_features", "detect", "forecast", "image", "ocr", "ranking", "streaming", "text"]
