"""What the inference protocols (Open Inference Protocol v2, TensorFlow Serving REST and gRPC) share.

Each protocol parses its own wire format into named numpy tensors; from there `tensors.infer` checks them
against the model's signature and generates through the same `GenerationService` and batcher as `/generate`.
"""
