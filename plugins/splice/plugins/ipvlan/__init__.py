"""The ipvlan driver (framework kind ``ipvlan``) and its configuration."""
