//! ONNX Runtime, models and their manifests, decoding with limits, plant detection, thumbnails.
