"""Voice front end: audio capture, voice activity detection and speech recognition backends.
Never imports rclpy."""
