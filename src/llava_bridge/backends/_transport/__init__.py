"""The one HTTP seam of the HTTP backends: effects, deadline, retrying flows, pools, SSE, limits."""
