//! Membership, leadership and status requests (Cluster and Maintenance services), and
//! the member-list refresh that keeps the client's endpoints current.

use ferrokv_proto::v1::{
    AddLearnerRequest, AddLearnerResponse, Member, MemberListRequest, MemberListResponse,
    PromoteLearnerRequest, PromoteLearnerResponse, RemoveMemberRequest, RemoveMemberResponse,
    StatusRequest, StatusResponse, TransferLeaderRequest, TransferLeaderResponse,
    cluster_client::ClusterClient, maintenance_client::MaintenanceClient,
};
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::attempt::{HasHeader, final_error};
use crate::client::{MAX_RESPONSE_BYTES, with_timeout};
use crate::endpoint::{Route, Target};
use crate::retry::{Failure, OpKind};
use crate::{Client, Error};

/// One endpoint's answer to [`Client::status_all`] or [`Client::status_members`].
#[derive(Debug)]
pub struct EndpointStatus {
    /// The endpoint (`host:port`) asked.
    pub endpoint: String,
    /// Its status, or why it could not be had.
    pub status: Result<StatusResponse, Error>,
}

fn cluster_client(channel: Channel) -> ClusterClient<Channel> {
    ClusterClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

impl Client {
    /// Lists the cluster's members (voters and learners). The client also starts
    /// using the members' client addresses as endpoints.
    ///
    /// ```no_run
    /// # async fn example(client: ferrokv_client::Client) -> Result<(), ferrokv_client::Error> {
    /// for member in client.member_list().await?.members {
    ///     println!("{} {} learner={}", member.id, member.name, member.is_learner);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn member_list(&self) -> Result<MemberListResponse, Error> {
        let response = self
            .call(
                OpKind::Read,
                Route::AnyMember,
                "member list",
                self.deadline(),
                |channel, timeout| {
                    let request = with_timeout(MemberListRequest {}, timeout);
                    async move { cluster_client(channel).member_list(request).await }
                },
            )
            .await?;
        self.learn_members(&response.members);
        Ok(response)
    }

    /// Asks the cluster for its member list and makes the members' client addresses
    /// the client's discovered endpoints (configured endpoints are kept). Returns every
    /// endpoint known afterwards. The client does this by itself periodically and
    /// after failures (see [`ClientBuilder::member_refresh_interval`](crate::ClientBuilder::member_refresh_interval)).
    ///
    /// ```no_run
    /// # async fn example(client: ferrokv_client::Client) -> Result<(), ferrokv_client::Error> {
    /// let endpoints = client.refresh_endpoints().await?;
    /// println!("using {}", endpoints.join(", "));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn refresh_endpoints(&self) -> Result<Vec<String>, Error> {
        self.mark_refreshed();
        self.member_list().await?;
        Ok(self.endpoints())
    }

    fn mark_refreshed(&self) {
        let mut last = self
            .inner
            .last_refresh
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *last = Some(Instant::now());
    }

    fn learn_members(&self, members: &[Member]) {
        if !members.is_empty() {
            self.inner.endpoints.set_members(members);
            self.mark_refreshed();
        }
    }

    /// Adds a learner: a member that receives the log but does not vote
    /// (`AddLearner`). With `wait_caught_up`, answers only once it has caught up with
    /// the leader's log. Promote it with [`Client::member_promote`].
    ///
    /// Membership changes are not resent once they may have reached the cluster: an
    /// unknown outcome is [`Error::Ambiguous`] (look at [`Client::member_list`]).
    ///
    /// ```no_run
    /// # async fn example(client: ferrokv_client::Client) -> Result<(), ferrokv_client::Error> {
    /// use ferrokv_client::AddLearnerRequest;
    /// let response = client
    ///     .member_add(AddLearnerRequest {
    ///         id: 4,
    ///         name: "ferrokv-3".into(),
    ///         peer_addr: "10.0.0.4:2380".into(),
    ///         client_addr: "10.0.0.4:2379".into(),
    ///         wait_caught_up: true,
    ///     })
    ///     .await?;
    /// client.member_promote(4).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn member_add(
        &self,
        request: AddLearnerRequest,
    ) -> Result<AddLearnerResponse, Error> {
        let response = self
            .call(
                OpKind::Write,
                Route::Leader,
                "member add",
                self.deadline(),
                |channel, timeout| {
                    let request = with_timeout(request.clone(), timeout);
                    async move { cluster_client(channel).add_learner(request).await }
                },
            )
            .await?;
        self.learn_members(&response.members);
        Ok(response)
    }

    /// Makes learner `id` a voter (`PromoteLearner`).
    ///
    /// ```no_run
    /// # async fn example(client: ferrokv_client::Client) -> Result<(), ferrokv_client::Error> {
    /// let members = client.member_promote(4).await?.members;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn member_promote(&self, id: u64) -> Result<PromoteLearnerResponse, Error> {
        let response = self
            .call(
                OpKind::Write,
                Route::Leader,
                "member promote",
                self.deadline(),
                |channel, timeout| {
                    let request = with_timeout(PromoteLearnerRequest { id }, timeout);
                    async move { cluster_client(channel).promote_learner(request).await }
                },
            )
            .await?;
        self.learn_members(&response.members);
        Ok(response)
    }

    /// Removes member `id` (voter or learner) from the cluster (`RemoveMember`); its
    /// endpoint is dropped from the client's list unless it was configured.
    ///
    /// ```no_run
    /// # async fn example(client: ferrokv_client::Client) -> Result<(), ferrokv_client::Error> {
    /// client.member_remove(3).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn member_remove(&self, id: u64) -> Result<RemoveMemberResponse, Error> {
        let response = self
            .call(
                OpKind::Write,
                Route::Leader,
                "member remove",
                self.deadline(),
                |channel, timeout| {
                    let request = with_timeout(RemoveMemberRequest { id }, timeout);
                    async move { cluster_client(channel).remove_member(request).await }
                },
            )
            .await?;
        self.learn_members(&response.members);
        Ok(response)
    }

    /// Hands leadership to voter `target_id` and waits until it leads
    /// (`TransferLeader`). Asking again is harmless, so this is retried like a read.
    ///
    /// ```no_run
    /// # async fn example(client: ferrokv_client::Client) -> Result<(), ferrokv_client::Error> {
    /// let leader = client.transfer_leader(2).await?.leader_id;
    /// assert_eq!(leader, 2);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn transfer_leader(&self, target_id: u64) -> Result<TransferLeaderResponse, Error> {
        self.call(
            OpKind::Read,
            Route::Leader,
            "leader transfer",
            self.deadline(),
            |channel, timeout| {
                let request = with_timeout(TransferLeaderRequest { target_id }, timeout);
                async move { cluster_client(channel).transfer_leader(request).await }
            },
        )
        .await
    }

    /// Asks one endpoint (`host:port`, known to the client or not) for its own status,
    /// through the Maintenance service. No failover: the point is to hear from that
    /// replica.
    ///
    /// ```no_run
    /// # async fn example(client: ferrokv_client::Client) -> Result<(), ferrokv_client::Error> {
    /// let status = client.status("127.0.0.1:2379").await?;
    /// println!("{} is {} in term {}", status.name, status.role, status.term);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn status(&self, endpoint: &str) -> Result<StatusResponse, Error> {
        let target = self.inner.endpoints.target(endpoint)?;
        self.status_of(target).await
    }

    /// Asks every endpoint the client knows (configured, then discovered) for its
    /// status, concurrently.
    ///
    /// ```no_run
    /// # async fn example(client: ferrokv_client::Client) {
    /// for entry in client.status_all().await {
    ///     match entry.status {
    ///         Ok(status) => println!("{}: leader {}", entry.endpoint, status.leader_id),
    ///         Err(err) => println!("{}: {err}", entry.endpoint),
    ///     }
    /// }
    /// # }
    /// ```
    pub async fn status_all(&self) -> Vec<EndpointStatus> {
        let targets: Vec<Result<Target, Error>> = self
            .endpoints()
            .iter()
            .map(|name| self.inner.endpoints.target(name))
            .collect();
        self.statuses(targets).await
    }

    /// Asks every member of the cluster, at its advertised client address, for its
    /// status, concurrently (`ferroctl endpoint status`): the member list decides who
    /// is asked, so a member that is down is reported, not skipped. When no member list
    /// can be had, falls back to the configured endpoints.
    ///
    /// ```no_run
    /// # async fn example(client: ferrokv_client::Client) {
    /// let down = client.status_members().await.iter().filter(|s| s.status.is_err()).count();
    /// println!("{down} members down");
    /// # }
    /// ```
    pub async fn status_members(&self) -> Vec<EndpointStatus> {
        let names: Vec<String> = match self.member_list().await {
            Ok(list) if list.members.iter().any(|m| !m.client_addr.is_empty()) => {
                let mut names = Vec::new();
                for member in &list.members {
                    let addr = member.client_addr.trim().to_string();
                    if !addr.is_empty() && !names.contains(&addr) {
                        names.push(addr);
                    }
                }
                names
            }
            _ => self
                .inner
                .endpoints
                .configured()
                .into_iter()
                .map(|t| t.name)
                .collect(),
        };
        let targets = names
            .iter()
            .map(|name| self.inner.endpoints.target(name))
            .collect();
        self.statuses(targets).await
    }

    async fn statuses(&self, targets: Vec<Result<Target, Error>>) -> Vec<EndpointStatus> {
        let requests = targets.into_iter().map(|target| async move {
            match target {
                Ok(target) => EndpointStatus {
                    endpoint: target.name.clone(),
                    status: self.status_of(target).await,
                },
                Err(err) => EndpointStatus {
                    endpoint: match &err {
                        Error::InvalidEndpoint { endpoint, .. } => endpoint.clone(),
                        _ => String::new(),
                    },
                    status: Err(err),
                },
            }
        });
        futures::future::join_all(requests).await
    }

    /// One Status request to one endpoint, no retries.
    async fn status_of(&self, target: Target) -> Result<StatusResponse, Error> {
        let timeout = self.timeout;
        let deadline = Instant::now() + timeout;
        let mut maintenance = MaintenanceClient::new(target.channel.clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        let call = maintenance.status(with_timeout(StatusRequest::default(), timeout));
        let result =
            tokio::time::timeout_at(deadline + std::time::Duration::from_millis(100), call).await;
        match result {
            Ok(Ok(response)) => {
                let response = response.into_inner();
                self.inner
                    .endpoints
                    .answered(&target.uri, response.header());
                Ok(response)
            }
            Ok(Err(status)) => {
                let failure = Failure::from_status(&status).at_deadline(Instant::now() >= deadline);
                Err(final_error("status", &target.name, timeout, failure))
            }
            Err(_) => Err(final_error(
                "status",
                &target.name,
                timeout,
                Failure::attempt_timed_out("status"),
            )),
        }
    }
}
