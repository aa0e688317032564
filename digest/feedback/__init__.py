"""Feedback where people read: signed like/dislike links in the digest (links.py, served by web.py inside
`digest daemon`). Every route writes the same likes and dislikes as `digest like`, through profiles.py."""
