"""The CNI front-end: one protocol engine (skel) shared by every splice executable."""
