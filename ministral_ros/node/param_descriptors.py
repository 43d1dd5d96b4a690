"""``rcl_interfaces/ParameterDescriptor`` for each entry of the parameter table (``params.PARAMS``):
type, description, read-only flag, range and the constraints ``ros2 param describe`` shows.
Message classes only, no rclpy."""
from __future__ import annotations

from ministral_ros.node.params import ParamSpec
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType

_PARAM_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
                float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING,
                tuple: ParameterType.PARAMETER_STRING_ARRAY}


def descriptor_for(spec: ParamSpec) -> ParameterDescriptor:
    kind = type(spec.default)
    desc = ParameterDescriptor(name=spec.name, type=_PARAM_TYPES[kind],
                               description=spec.description, read_only=spec.read_only)
    constraints = []
    if spec.choices:
        constraints.append('one of: ' + ', '.join(spec.choices))
    if spec.low_exclusive:
        constraints.append(f'greater than {spec.low:g}')
    if spec.read_only:
        constraints.append('read-only: set at launch (the loaded model depends on it)')
    desc.additional_constraints = '; '.join(constraints)
    if spec.low is not None and kind is float:
        desc.floating_point_range = [FloatingPointRange(from_value=float(spec.low),
                                                        to_value=float(spec.high), step=0.0)]
    elif spec.low is not None and kind is int:
        desc.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high),
                                           step=1)]
    return desc


def declared_default(spec: ParamSpec) -> object:
    """The value to declare: ROS string arrays are lists (``NodeSettings`` keeps tuples)."""
    return list(spec.default) if isinstance(spec.default, tuple) else spec.default
