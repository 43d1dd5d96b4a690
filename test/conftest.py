"""Test-session set-up shared by every test file.

ROS 2 over real DDS: discovery stays on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE; the wheels
ignore ROS_LOCALHOST_ONLY) and each pytest session takes its own ROS_DOMAIN_ID so that concurrent
sessions never see each other's nodes. Both are set before anything imports rclpy.
"""
import os

os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.setdefault('ROS_DOMAIN_ID', str(1 + os.getpid() % 100))
