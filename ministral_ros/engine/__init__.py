"""The inference engine: ONNX export of Ministral/Mistral checkpoints and an onnxruntime decode
loop with a per-layer (interleaved sliding-window) KV cache. Never imports rclpy."""
