variable "project_id" {
  type        = string
  description = "GCP project that holds the bucket and the GKE cluster"
}

variable "region" {
  type    = string
  default = "us-central1"
}

variable "zone" {
  type    = string
  default = "us-central1-a"
}

variable "bucket_name" {
  type        = string
  description = "globally unique bucket for cubes/, checkpoints/ and mosaics/"
}

variable "gke_cluster" {
  type        = string
  description = "name of the existing GKE cluster running the KubeRay operator"
}

variable "gpu_machine_type" {
  type    = string
  default = "g2-standard-8"
}

variable "gpu_type" {
  type    = string
  default = "nvidia-l4"
}

variable "gpu_max_nodes" {
  type    = number
  default = 16
}

variable "cube_nearline_days" {
  type    = number
  default = 30
}

variable "cube_delete_days" {
  type    = number
  default = 180
}
