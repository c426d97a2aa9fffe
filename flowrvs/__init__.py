"""FlowRVS — referring video object segmentation as flow matching (arXiv 2510.06139, papers.md §2).

Host-free core (no ComfyUI imports). For now it exports the DAVIS evaluation metric
(:mod:`.metrics`): :func:`region_j`, :func:`boundary_f`, :func:`j_and_f`, :func:`mean_j_and_f`.
"""

from .metrics import boundary_f, boundary_map, boundary_prf, dilate_disk, j_and_f, mean_j_and_f, region_j

__all__ = ["boundary_f", "boundary_map", "boundary_prf", "dilate_disk", "j_and_f", "mean_j_and_f",
           "region_j"]
