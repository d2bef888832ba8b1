"""gunicorn settings of the plain-Flask peer: one gevent worker, as chatapp runs."""

worker_class = "gevent"
workers = 1
worker_connections = 12000
control_socket_disable = True
accesslog = None
