"""Launch the ministral node: ``ros2 launch ministral_ros ministral.launch.py
[params_file:=...] [namespace:=robot1] [use_sim_time:=true] [log_level:=info] [node_name:=...]``.

Thin on purpose: the arguments, their defaults and what reaches the node are decided in
``ministral_ros.node.launch_config`` (tested without ``launch``).
"""
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from ministral_ros.node.launch_config import arguments, node_kwargs, PACKAGE


def _node(context):
    values = {arg.name: LaunchConfiguration(arg.name).perform(context)
              for arg in arguments(get_package_share_directory(PACKAGE))}
    return [Node(**node_kwargs(**values))]


def generate_launch_description():
    declared = [DeclareLaunchArgument(arg.name, default_value=arg.default,
                                      description=arg.description)
                for arg in arguments(get_package_share_directory(PACKAGE))]
    return LaunchDescription([*declared, OpaqueFunction(function=_node)])
