//! Making sure the engine has a task's image: pulled when missing, its progress handed to
//! the caller (an allocation's events), and a failure that names the image and the reason.

use bollard::query_parameters::CreateImageOptionsBuilder;
use futures_util::StreamExt;

use super::{DockerDriver, DockerError, not_found};

/// An image reference split into what the engine's pull takes: the repository and the tag
/// or digest (`latest` when none is given: an empty tag would pull every tag).
fn split_reference(image: &str) -> (&str, &str) {
    if let Some((repo, digest)) = image.split_once('@') {
        return (repo, digest);
    }
    // A `:` after the last `/` is a tag; one before it is a registry's port.
    let name_start = image.rfind('/').map_or(0, |i| i + 1);
    match image[name_start..].rfind(':') {
        Some(i) => (&image[..name_start + i], &image[name_start + i + 1..]),
        None => (image, "latest"),
    }
}

impl DockerDriver {
    /// Pulls `image` unless the engine has it. `progress` hears the pull's overall steps
    /// (not every layer's bytes).
    pub async fn ensure_image(
        &self,
        image: &str,
        mut progress: impl FnMut(String),
    ) -> Result<(), DockerError> {
        let docker = self.client().await?;
        match docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(DockerError::engine("inspect the image")(e)),
        }
        let (repo, tag) = split_reference(image);
        tracing::info!(image, "pulling the image");
        progress(format!("pulling image {image}"));
        let options = CreateImageOptionsBuilder::default()
            .from_image(repo)
            .tag(tag)
            .build();
        let mut pull = docker.create_image(Some(options), None, None);
        let pull_error = |why: String| DockerError::Pull {
            image: image.to_owned(),
            why,
        };
        while let Some(item) = pull.next().await {
            let info = item.map_err(|e| pull_error(super::describe(&e)))?;
            if let Some(detail) = info.error_detail {
                return Err(pull_error(detail.message.unwrap_or_default()));
            }
            // Steps without a layer ID are the pull's own (`Pulling from …`, `Status: …`).
            if info.id.is_none()
                && let Some(status) = info.status
            {
                progress(format!("image {image}: {status}"));
            }
        }
        // A pull that "succeeds" without the image (a platform mismatch) is still a failure.
        docker
            .inspect_image(image)
            .await
            .map(|_| ())
            .map_err(|e| pull_error(format!("not there after pulling: {}", super::describe(&e))))
    }
}

#[cfg(test)]
mod tests {
    use super::split_reference;

    #[test]
    fn references_split_into_repository_and_tag() {
        assert_eq!(split_reference("busybox"), ("busybox", "latest"));
        assert_eq!(split_reference("busybox:1.36"), ("busybox", "1.36"));
        assert_eq!(
            split_reference("registry:5000/team/app"),
            ("registry:5000/team/app", "latest")
        );
        assert_eq!(
            split_reference("registry:5000/app:2"),
            ("registry:5000/app", "2")
        );
        assert_eq!(split_reference("app@sha256:abc"), ("app", "sha256:abc"));
    }
}
