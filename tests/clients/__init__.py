"""Real-client tests: podman 4.3 (CNI backend) and containerd 1.6 (`ctr run --cni`) driving splice."""
