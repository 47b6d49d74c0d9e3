#!/usr/bin/env bash
# Build the serving image and push it to Amazon ECR (or to REGISTRY), for SageMaker's
# CreateModel. Prints the pushed image URI as the last line of stdout; everything else
# goes to stderr, so `uri=$(./build_and_push.sh)` just works.
#
# Environment:
#   AWS_REGION / AWS_DEFAULT_REGION   region (else `aws configure get region`)
#   REGISTRY      push here instead of ACCOUNT.dkr.ecr.REGION.amazonaws.com (the repository
#                 is still created, when missing, through the ECR API of these credentials)
#   DOCKER        the docker client to use (default: docker)
#   VARIANT       cpu (default) or transformers (torch, for transformer pipelines); the
#                 default tag of the transformers image is latest-transformers
#   BASE_IMAGE, PIP_CERT, SPACY_MODEL_PACKAGE, PLATFORM   passed to scripts/build-image.sh
set -euo pipefail

usage="usage: [VARIANT=cpu|transformers] $0 [IMAGE_NAME] [TAG]   (defaults: spacy-ner-sagemaker latest)"
here=$(cd "$(dirname "$0")" && pwd)

die() {
    echo "build_and_push: $*" >&2
    exit 1
}

case "${1:-}" in
    -h | --help)
        echo "$usage"
        exit 0
        ;;
esac
[ $# -le 2 ] || die "too many arguments; $usage"
name=${1:-spacy-ner-sagemaker}
case ${VARIANT:-cpu} in
    cpu) tag=${2:-latest} ;;
    transformers) tag=${2:-latest-transformers} ;;
    *) die "VARIANT=$VARIANT: cpu or transformers; $usage" ;;
esac

# ECR's own rules for repository names and tags: refuse here, before a long build, what
# create-repository or docker push would refuse afterwards.
[[ $name =~ ^([a-z0-9]+([._-][a-z0-9]+)*/)*[a-z0-9]+([._-][a-z0-9]+)*$ ]] ||
    die "IMAGE_NAME '$name' is not a valid repository name (lower case letters, digits, . _ - /); $usage"
[[ $tag =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] ||
    die "TAG '$tag' is not a valid image tag (letters, digits, _ . -, at most 128); $usage"

docker=${DOCKER:-docker}
command -v "$docker" >/dev/null ||
    die "docker: '$docker' not found; install Docker (https://docs.docker.com/get-docker/) or set DOCKER"
command -v aws >/dev/null ||
    die "aws: the AWS CLI is not installed or not on PATH (pip install awscli, or see https://aws.amazon.com/cli/)"
"$docker" info >/dev/null 2>&1 ||
    die "docker: the Docker engine is not answering ('$docker info' failed); start Docker and retry"

region=${AWS_REGION:-${AWS_DEFAULT_REGION:-$(aws configure get region 2>/dev/null || true)}}
[ -n "$region" ] ||
    die "aws: no region; set AWS_REGION (or AWS_DEFAULT_REGION), or run 'aws configure'"
export AWS_DEFAULT_REGION=$region

# Checked before the build, so a missing login fails in a second, not after minutes.
# stderr goes to a file, not into $account: the CLI may print warnings on success.
errors=$(mktemp)
trap 'rm -f "$errors"' EXIT
if ! account=$(aws sts get-caller-identity --query Account --output text 2>"$errors"); then
    die "aws sts get-caller-identity failed: $(tr '\n' ' ' <"$errors")- check your AWS credentials ('aws configure', AWS_PROFILE)"
fi

registry=${REGISTRY:-$account.dkr.ecr.$region.amazonaws.com}
uri=$registry/$name:$tag

# The repository and the login come before the build, so that missing ECR permissions
# fail in seconds, not after minutes of building. Create the repository only when it is
# missing: describe first, so a repository made by someone else is left as it is.
if ! err=$(aws ecr describe-repositories --repository-names "$name" 2>&1 >/dev/null); then
    case "$err" in
        *RepositoryNotFoundException*)
            echo "build_and_push: creating ECR repository $name in $region" >&2
            aws ecr create-repository --repository-name "$name" >/dev/null ||
                die "aws ecr create-repository --repository-name $name failed"
            ;;
        *) die "aws ecr describe-repositories failed: $err" ;;
    esac
fi

echo "build_and_push: logging in to $registry" >&2
aws ecr get-login-password | "$docker" login --username AWS --password-stdin "$registry" >&2 ||
    die "docker login to $registry failed (aws ecr get-login-password | docker login)"

echo "build_and_push: building $name:$tag" >&2
# One build path for the whole project: the same script `make image` uses (platform
# linux/amd64, provenance off, BuildKit secret for PIP_CERT).
"$here/scripts/build-image.sh" "$name:$tag" >&2 || die "docker build failed (scripts/build-image.sh $name:$tag)"
"$docker" tag "$name:$tag" "$uri" >&2 || die "docker tag $name:$tag $uri failed"

echo "build_and_push: pushing $uri" >&2
"$docker" push "$uri" >&2 || die "docker push $uri failed"

echo "$uri"
