# One image for every part: the service is chosen by the command (`guarantor ledger`, ...).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# SQL is checked at compile time against the committed query data (.sqlx), without a database.
ENV SQLX_OFFLINE=true
RUN cargo build --release --locked -p guarantor

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/guarantor --create-home guarantor
COPY --from=build /src/target/release/guarantor /usr/local/bin/guarantor
USER guarantor
WORKDIR /var/lib/guarantor
ENTRYPOINT ["/usr/local/bin/guarantor"]
