"""Command-to-plan core: action vocabulary, constrained function calling, parsing, conversation
history. Never imports rclpy."""
