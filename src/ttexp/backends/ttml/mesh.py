"""Opening ttml's device mesh and averaging gradients over it, in whichever API this ttml has.

Two data-parallel APIs exist (reference/ttml_audit_2026-11.md, mismatch 2):

- current: ``ttml.open_device_mesh(ttml.Mesh(shape, axis_names), device_ids)`` (it validates
  ``TT_MESH_GRAPH_DESC_PATH`` and enables the fabric itself when the mesh has more than one
  device) and ``ttml.sync_gradients(parameters, axis_names)``, which all-reduces and averages the
  gradients over the named axes (``tt-train/sources/ttml/ttml/mesh.py`` @
  e92a955c34bb4c0690b87315d75a5e9602280d9b; used by ``ttml/trainers/sft_trainer.py`` @
  db9660afbd9414c67ebdcacb0db497c7d687d985). ``sync_gradients`` is a silent no-op when no named
  mesh is open or the mesh has no such axis, so both halves must be used together.
- older: ``core.distributed.enable_fabric(n)`` -> ``AutoContext.open_device(shape, ids)`` ->
  ``initialize_parallelism_context(DistributedConfig(enable_ddp=True))`` and
  ``core.distributed.synchronize_gradients(parameters)`` (or ``synchronize_parameters``)
  (reference/ttml_api.md §2 and §6).

:func:`open_mesh`, :func:`close_mesh` and :func:`sync_gradients` pick by :class:`~ttexp.backends.ttml.api.TtmlApi`.
"""

from __future__ import annotations

from typing import Any

from ttexp.backends.ttml.api import MeshPlan, TtmlApi

DP_AXIS = "dp"
"""The data-parallel axis name ``sync_gradients`` reduces over by default (``ttml/mesh.py``)."""



def mesh_axis_names(enable_ddp: bool) -> tuple[str, str]:
    """Axis names of the ``[1, N]`` mesh, as tt-train's ``build_mesh`` names them for a line mesh
    (``ttml/common/utils.py``, read from the index's newest stored version, id 58117005223): the
    one axis longer than 1 is ``"dp"`` when DDP is on; every other axis gets the placeholder
    ``_i`` that ``open_device_mesh`` gives a plain tuple's axes (``ttml/mesh.py`` @
    2121132d303ef9b1287506c42c445be87354753d). So ``("_0", "dp")`` on N300/T3K/Galaxy and
    ``("_0", "_1")`` on one N150 chip."""
    return ("_0", DP_AXIS) if enable_ddp else ("_0", "_1")


def open_mesh(ttml: Any, ctx: Any, api: TtmlApi, plan: MeshPlan) -> None:
    """Open the devices of ``plan`` (shape ``[1, N]``) with the newest API ``ttml`` has.

    Raises:
        RuntimeError: whatever ttml raises, e.g. the mesh shape disagrees with the mesh graph
            descriptor in ``TT_MESH_GRAPH_DESC_PATH`` (``ttml/mesh.py``, ``_validate_mgd``).
    """
    if api.has_device_mesh:
        mesh = ttml.Mesh(tuple(plan.mesh_shape), mesh_axis_names(plan.enable_ddp))
        if plan.device_ids is not None:
            ttml.open_device_mesh(mesh, tuple(plan.device_ids))
        else:
            ttml.open_device_mesh(mesh)
        return
    dist = ttml.core.distributed
    if plan.enable_fabric and api.has_enable_fabric:
        dist.enable_fabric(plan.num_devices)
    if plan.device_ids is not None:
        ctx.open_device(plan.mesh_shape, plan.device_ids)
    else:
        ctx.open_device(plan.mesh_shape)


def close_mesh(ttml: Any, ctx: Any, api: TtmlApi) -> None:
    """Close the devices; ``close_device_mesh`` also forgets the named mesh (``ttml/mesh.py``)."""
    if api.has_device_mesh and getattr(ttml, "close_device_mesh", None) is not None:
        ttml.close_device_mesh()
    else:
        ctx.close_device()


def init_data_parallel(ttml: Any, ctx: Any, api: TtmlApi, plan: MeshPlan) -> None:
    """The older API's parallelism context (after ``open_device``); none for the mesh API: tt-train's
    named-mesh DDP opens no parallelism context, and ``synchronize_gradients`` is what goes with one
    (tt-train's trainers pair them so; sync_gradients needs a named mesh)."""
    if (plan.enable_ddp and not api.has_device_mesh and api.has_parallelism_context
            and not ctx.is_parallelism_context_initialized()):
        ctx.initialize_parallelism_context(ttml.autograd.DistributedConfig(enable_ddp=True))


def sync_gradients(ttml: Any, api: TtmlApi, parameters: Any) -> None:
    """Average the gradients of ``parameters`` (a ``NamedParameters``) over the data-parallel mesh.

    Raises:
        AttributeError: ``api.grad_sync`` is None (the backend refuses a mesh before that).
    """
    if api.grad_sync == "sync_gradients":
        ttml.sync_gradients(parameters, (DP_AXIS,))
    else:
        getattr(ttml.core.distributed, api.grad_sync)(parameters)
