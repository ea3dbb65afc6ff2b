// pushgate client
