"""Restore a checkpoint into built models one variable at a time, without a second copy.

`tf.train.Checkpoint.read` reads every tensor of the restored objects in one RestoreV2 op
and then assigns them, so restoring the full model's generators (2 x 1.1 GB, each with a 1 GB
MLP kernel) holds the weights twice; reading a slice of a tensor reads all of it, and a
sliced assign copies the variable. `restore_variables` instead walks
our objects alongside the object graph stored in the checkpoint (as the checkpoint's own
restore does, so a tensor saved under an optimizer's path is found too), checks every shape
and dtype first, then releases every variable's buffer and reads each tensor straight into
its variable, so the reads reuse the released memory. Peak memory stays that of the built
model (measured in docs/serving.md).
"""

from __future__ import annotations

import collections

import keras
import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2

_OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"


def checkpoint_variables(root, reader) -> list[tuple[str, str, tf.Variable]]:
    """(path, checkpoint key, backing tf.Variable) of every variable reachable from `root`
    (a tf.train.Checkpoint or any trackable), matched by attribute names against the object
    graph stored in the checkpoint `reader` reads. Raises ValueError naming the first
    object or variable the checkpoint does not have."""
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor(_OBJECT_GRAPH))
    queue = collections.deque([(root, 0, "")])
    seen = {id(root)}
    out = []
    while queue:
        obj, node_id, path = queue.popleft()
        stored = {c.local_name: c.node_id for c in graph.nodes[node_id].children}
        for name, child in tf.train.TrackableView(obj).children(obj).items():
            if id(child) in seen:
                continue
            seen.add(id(child))
            child_path = f"{path}/{name}" if path else name
            if name not in stored:
                raise ValueError(f"the checkpoint has no {child_path}")
            node = graph.nodes[stored[name]]
            if isinstance(child, (tf.Variable, keras.Variable)):
                keys = [a.checkpoint_key for a in node.attributes if a.name == "VARIABLE_VALUE"]
                if not keys:
                    raise ValueError(f"the checkpoint has no value for {child_path}")
                out.append((child_path, keys[0], getattr(child, "value", child)))
            else:
                queue.append((child, stored[name], child_path))
    return out


def _replace_value(variable: tf.Variable, value) -> None:
    """Give `variable` the buffer of `value` (no copy). validate_shape=False lets the
    variable hold an empty placeholder in between."""
    tf.raw_ops.AssignVariableOp(resource=variable.handle, value=value, validate_shape=False)


def restore_variables(root, prefix: str) -> int:
    """Restore every variable reachable from `root` from checkpoint `prefix`; other entries
    of the checkpoint (optimizer slots, networks not built) are not read. Raises ValueError
    naming the first variable that is missing or has another shape or dtype, before any
    variable is changed. Returns the number of variables restored."""
    reader = tf.train.load_checkpoint(prefix)
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    try:
        variables = checkpoint_variables(root, reader)
    except ValueError as e:
        raise ValueError(f"{prefix}: {e}") from e
    for path, key, variable in variables:
        if list(shapes[key]) != variable.shape.as_list() or dtypes[key] != variable.dtype:
            raise ValueError(f"{prefix}: {path} is {dtypes[key].name} {list(shapes[key])}, "
                             f"the model expects {variable.dtype.name} "
                             f"{variable.shape.as_list()}")
    for _, _, variable in variables:  # free every old buffer first: the reads reuse them
        _replace_value(variable, tf.zeros([0], variable.dtype))
    for _, key, variable in variables:
        _replace_value(variable, tf.raw_ops.RestoreV2(
            prefix=prefix, tensor_names=[key], shape_and_slices=[""],
            dtypes=[variable.dtype])[0])
    return len(variables)
