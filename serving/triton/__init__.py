"""Real NVIDIA Triton serving of the reference model on this host.

repository.py writes the model repository (config.pbtxt + Python-backend model.py);
server.py starts and stops `tritonserver` processes from the nvidia-pytriton wheel and reads
their readiness and Prometheus metrics. Import the submodules directly: server.py pulls in
tritonclient, which the repository writer does not need.
"""
