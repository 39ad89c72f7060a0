"""The flannel meta-plugin's pieces: subnet.env, the delegate config, saved configs."""
