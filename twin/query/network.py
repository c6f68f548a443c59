"""A walking network from road LineStrings, features attached, distances by scipy's Dijkstra."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

LOGGER = logging.getLogger(__name__)

MIN_EDGE_M = 1e-6  # csgraph treats a zero weight as "no edge"; coincident nodes get this instead
NODE_SNAP_M = 0.001  # vertices closer than a millimetre are one node
# A road that ends this close to another one (and meets no road at its end) joins it: drawn
# internal roads often stop at the compound gate or the kerb of the street, not on its centreline,
# and a round trip through degrees leaves T-junctions a millimetre apart.
JOIN_M = 30.0


@dataclass
class Network:
    """An undirected walking graph; ``leaf[i]`` is the node of the i-th attached geometry."""

    graph: object
    leaf: np.ndarray
    access_m: np.ndarray  # length of the attachment of each geometry to its road point

    def distances(self, sources: np.ndarray, limit: float) -> np.ndarray:
        """Shortest walking distance from the nearest of the attached *sources* to every node."""
        if len(sources) == 0:
            return np.full(self.graph.shape[0], np.inf)
        return dijkstra(
            self.graph, directed=False, indices=self.leaf[sources], limit=limit, min_only=True
        )


def _snaps(segs: np.ndarray, geoms: np.ndarray) -> tuple[np.ndarray, ...]:
    """Nearest segment of each geometry, the nearest point on it, its position along it, the gap."""
    which, seg = shapely.STRtree(segs).query_nearest(geoms, all_matches=False)
    seg = seg[np.argsort(which, kind="stable")]
    link = shapely.shortest_line(geoms, segs[seg])
    xy = shapely.get_coordinates(shapely.get_point(link, 1))
    t = shapely.line_locate_point(segs[seg], shapely.points(xy))
    return seg, xy, t, shapely.length(link)


def build(roads: np.ndarray, attach: np.ndarray, join_m: float = JOIN_M) -> Network:
    """Build the network of *roads* (metric LineStrings) with each of *attach* joined to it.

    Roads are noded where they cross (GEOS unary union) and split into segments; a road end
    within *join_m* of another road is joined to it; every attached geometry gets a leaf node
    linked to the nearest point of the nearest segment, which splits that segment. Everything is
    done on whole arrays.
    """
    noded = shapely.get_parts(shapely.union_all(roads))
    coords, line = shapely.get_coordinates(noded, return_index=True)
    same = line[1:] == line[:-1]
    a, b = coords[:-1][same], coords[1:][same]
    segs = shapely.linestrings(np.stack([a, b], axis=1))
    n_seg = len(segs)
    seg_len = shapely.length(segs)
    # dangling road ends near another road: the nearest segment they do not touch
    ends = np.concatenate(
        [
            shapely.get_coordinates(shapely.get_point(noded, 0)),
            shapely.get_coordinates(shapely.get_point(noded, -1)),
        ]
    )
    ends = np.unique(np.round(ends / NODE_SNAP_M), axis=0) * NODE_SNAP_M
    e_idx, e_seg = shapely.STRtree(segs).query(
        shapely.points(ends), predicate="dwithin", distance=join_m
    )
    gap = shapely.distance(shapely.points(ends[e_idx]), segs[e_seg])
    p = ends[e_idx]
    at_end = np.minimum(np.hypot(*(p - a[e_seg]).T), np.hypot(*(p - b[e_seg]).T)) < NODE_SNAP_M
    # an end shared by two or more segments is a junction already; one that only its own
    # segment ends at is loose, and joins the nearest other segment that it is not an end of
    degree = np.bincount(e_idx[at_end], minlength=len(ends))
    pick = ~at_end & (degree[e_idx] < 2)
    j_end = e_idx[pick]
    j_seg_all, j_gap_all = e_seg[pick], gap[pick]
    best = np.lexsort((j_gap_all, j_end))
    first = np.r_[True, j_end[best][1:] != j_end[best][:-1]] if len(best) else np.array([], bool)
    j_end, j_seg = j_end[best][first], j_seg_all[best][first]
    j_link = shapely.shortest_line(shapely.points(ends[j_end]), segs[j_seg])
    j_xy = shapely.get_coordinates(shapely.get_point(j_link, 1))
    j_t = shapely.line_locate_point(segs[j_seg], shapely.points(j_xy))
    j_gap = shapely.length(j_link)
    # attached features
    seg, snap, t, access = _snaps(segs, attach)
    # every point on a segment (its two ends, joins and snaps) in order along it
    pos_seg = np.concatenate([np.arange(n_seg), np.arange(n_seg), j_seg, seg])
    pos_t = np.concatenate([np.zeros(n_seg), seg_len, j_t, t])
    pos_xy = np.concatenate([a, b, j_xy, snap])
    order = np.lexsort((pos_t, pos_seg))
    key = np.round(pos_xy / NODE_SNAP_M).astype(np.int64)
    end_key = np.round(ends[j_end] / NODE_SNAP_M).astype(np.int64)
    uniq, inverse = np.unique(np.concatenate([key, end_key]), axis=0, return_inverse=True)
    inverse = inverse.ravel()
    node_of_pos, end_node = inverse[: len(key)], inverse[len(key) :]
    n_nodes = len(uniq)
    s_seg, s_t, s_node = pos_seg[order], pos_t[order], node_of_pos[order]
    chain = s_seg[1:] == s_seg[:-1]
    u, v, w = s_node[:-1][chain], s_node[1:][chain], (s_t[1:] - s_t[:-1])[chain]
    off = 2 * n_seg
    join_node = node_of_pos[off : off + len(j_seg)]
    snap_node = node_of_pos[off + len(j_seg) :]
    leaf = np.arange(n_nodes, n_nodes + len(attach))
    u = np.concatenate([u, end_node, snap_node])
    v = np.concatenate([v, join_node, leaf])
    w = np.concatenate([w, j_gap, access])
    keep = u != v
    u, v, w = u[keep], v[keep], np.maximum(w[keep], MIN_EDGE_M)
    lo, hi = np.minimum(u, v), np.maximum(u, v)
    total = n_nodes + len(attach)
    pair = lo.astype(np.int64) * total + hi
    first = np.lexsort((w, pair))
    pair, lo, hi, w = pair[first], lo[first], hi[first], w[first]
    uniq_edge = np.r_[True, pair[1:] != pair[:-1]]  # keep the shortest of parallel edges
    graph = coo_matrix((w[uniq_edge], (lo[uniq_edge], hi[uniq_edge])), shape=(total, total))
    LOGGER.debug(
        "walking network: %d nodes, %d edges, %d joins, %d attached",
        total,
        int(uniq_edge.sum()),
        len(j_seg),
        len(attach),
    )
    return Network(graph.tocsr(), leaf, access)
