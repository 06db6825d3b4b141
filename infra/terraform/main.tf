# sar2opt on GCP: the object store for cubes, checkpoints and mosaics (with lifecycle rules)
# and the GPU node pool the KubeRay workers run on. `terraform init && terraform apply`.

terraform {
  required_version = ">= 1.6"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.0"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}

# One bucket, three prefixes: cubes/ (rebuildable), checkpoints/ (kept), mosaics/ (products).
resource "google_storage_bucket" "data" {
  name                        = var.bucket_name
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  versioning {
    enabled = true
  }

  # cubes are a cache of STAC inputs: move to cheaper storage, then delete
  lifecycle_rule {
    condition {
      age            = var.cube_nearline_days
      matches_prefix = ["cubes/"]
    }
    action {
      type          = "SetStorageClass"
      storage_class = "NEARLINE"
    }
  }
  lifecycle_rule {
    condition {
      age            = var.cube_delete_days
      matches_prefix = ["cubes/"]
    }
    action {
      type = "Delete"
    }
  }
  # old versions of overwritten objects (e.g. re-run tiles) do not pile up
  lifecycle_rule {
    condition {
      num_newer_versions = 2
      with_state         = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }
}

resource "google_container_node_pool" "gpu" {
  name     = "sar2opt-gpu"
  cluster  = var.gke_cluster
  location = var.zone

  autoscaling {
    min_node_count = 0
    max_node_count = var.gpu_max_nodes
  }

  node_config {
    machine_type = var.gpu_machine_type
    spot         = true

    guest_accelerator {
      type  = var.gpu_type
      count = 1
      gpu_driver_installation_config {
        gpu_driver_version = "LATEST"
      }
    }

    taint {
      key    = "nvidia.com/gpu"
      value  = "present"
      effect = "NO_SCHEDULE"
    }

    oauth_scopes = ["https://www.googleapis.com/auth/cloud-platform"]
    labels = {
      app = "sar2opt"
    }
  }
}

# The Planetary Computer key and other credentials live in Secret Manager, never in configs.
resource "google_secret_manager_secret" "pc_key" {
  secret_id = "sar2opt-pc-subscription-key"
  replication {
    auto {}
  }
}
