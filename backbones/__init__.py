"""First-party backbones of notellm2_pl, registered through the same entry points a third party uses."""
