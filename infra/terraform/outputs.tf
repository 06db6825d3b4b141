output "bucket_url" {
  value = "gs://${google_storage_bucket.data.name}"
}

output "gpu_node_pool" {
  value = google_container_node_pool.gpu.name
}
