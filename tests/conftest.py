import os

# Tests never touch the network; huggingface_hub reads this once, at import.
os.environ['HF_HUB_OFFLINE'] = '1'
