"""Ministral tokenizer (tekken) and the exact V3 prompt format. Never imports rclpy."""
