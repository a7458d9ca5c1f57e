"""The pull API Chengjiyun calls: signed queries answered from the snapshot."""
