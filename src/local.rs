//! [`LocalCluster`]: a scheduler and workers in this process, talking real QUIC over loopback,
//! for running graphs on one machine with no set-up.

use std::time::Duration;

use drover_annotations::Resources;
use drover_protocol::AccessFile;
use drover_scheduler::server::{Scheduler, SchedulerConfig};
use drover_worker::{run_worker_notify, Registry, WorkerConfig};

use crate::client::{Client, ClientError};

/// Which workers a local cluster has: `3` is three plain workers; `A=2,B=1` two workers in
/// pool A and one in pool B; entries combine (`A=2,1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    /// (pool or none, how many workers).
    pub groups: Vec<(Option<String>, usize)>,
    /// Threads per worker.
    pub nthreads: u32,
    /// Keep the progress of durable tasks in the embedded store of this directory
    /// (`DIR/progress.redb`, shared with `drover foreach` and `drover progress` on this
    /// machine), so it outlives the cluster; `None` keeps it only while the cluster lives.
    pub progress_dir: Option<std::path::PathBuf>,
    /// Serve the scheduler's dashboard and `/metrics` on a free loopback port (see
    /// [`LocalCluster::access`]'s `dashboard`). Off by default.
    pub dashboard: bool,
}

impl ClusterSpec {
    /// `n` plain workers with `nthreads` each.
    pub fn plain(n: usize, nthreads: u32) -> ClusterSpec {
        ClusterSpec {
            groups: vec![(None, n)],
            nthreads,
            progress_dir: None,
            dashboard: false,
        }
    }

    /// The same cluster, keeping durable tasks' progress in `dir` (see
    /// [`ClusterSpec::progress_dir`]).
    pub fn with_progress_dir(self, dir: impl Into<std::path::PathBuf>) -> ClusterSpec {
        ClusterSpec {
            progress_dir: Some(dir.into()),
            ..self
        }
    }

    /// The same cluster, with the scheduler's dashboard on a free loopback port.
    pub fn with_dashboard(self) -> ClusterSpec {
        ClusterSpec {
            dashboard: true,
            ..self
        }
    }

    /// Each worker's name (`local-POOL-I`, or `local-plain-I`) and resources (`pool-POOL=1`, or
    /// none), in order.
    pub fn workers(&self) -> impl Iterator<Item = (String, Resources)> + '_ {
        self.groups
            .iter()
            .flat_map(|(pool, count)| std::iter::repeat_n(pool, *count))
            .enumerate()
            .map(|(index, pool)| {
                let mut resources = Resources::new();
                if let Some(p) = pool {
                    resources
                        .insert(&format!("pool-{p}"), 1.0)
                        .expect("validated pool name");
                }
                let name = format!("local-{}-{index}", pool.as_deref().unwrap_or("plain"));
                (name, resources)
            })
    }

    /// Parses `N` or `POOL=N[,POOL=N...]` (see the type docs).
    pub fn parse(spec: &str, nthreads: u32) -> Result<ClusterSpec, String> {
        let mut groups = Vec::new();
        for part in spec.split(',').map(str::trim) {
            let bad = || format!("bad cluster spec {spec:?}: part {part:?} is not N or POOL=N");
            let (pool, count) = match part.split_once('=') {
                Some((p, n)) => {
                    drover_annotations::Pool::new(p.trim())
                        .map_err(|e| format!("bad cluster spec {spec:?}: {e}"))?;
                    (Some(p.trim().to_owned()), n.trim())
                }
                None => (None, part),
            };
            let n: usize = count.parse().map_err(|_| bad())?;
            groups.push((pool, n));
        }
        if groups.iter().map(|(_, n)| n).sum::<usize>() == 0 {
            return Err(format!("bad cluster spec {spec:?}: no workers"));
        }
        Ok(ClusterSpec {
            groups,
            nthreads,
            progress_dir: None,
            dashboard: false,
        })
    }
}

impl std::str::FromStr for ClusterSpec {
    type Err = String;
    /// `N` or `POOL=N[,POOL=N...]`, one thread per worker.
    fn from_str(spec: &str) -> Result<ClusterSpec, String> {
        ClusterSpec::parse(spec, 1)
    }
}

impl TryFrom<&str> for ClusterSpec {
    type Error = String;
    fn try_from(spec: &str) -> Result<ClusterSpec, String> {
        spec.parse()
    }
}

impl From<usize> for ClusterSpec {
    /// `n` plain workers, one thread each.
    fn from(n: usize) -> ClusterSpec {
        ClusterSpec::plain(n, 1)
    }
}

impl From<&ClusterSpec> for ClusterSpec {
    fn from(spec: &ClusterSpec) -> ClusterSpec {
        spec.clone()
    }
}

/// A cluster spec from what [`LocalCluster::start`] takes.
fn into_spec<S>(spec: S) -> Result<ClusterSpec, LocalError>
where
    S: TryInto<ClusterSpec>,
    S::Error: std::fmt::Display,
{
    spec.try_into().map_err(|e| LocalError::Spec(e.to_string()))
}

/// Errors starting a local cluster.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The scheduler did not start.
    #[error("scheduler: {0}")]
    Scheduler(#[from] drover_scheduler::server::StartError),
    /// A worker did not join.
    #[error("worker {name}: {error}")]
    Worker {
        /// The worker.
        name: String,
        /// Why.
        error: String,
    },
    /// The cluster spec is malformed.
    #[error("{0}")]
    Spec(String),
    /// The temporary state dir could not be made.
    #[error("temporary directory: {0}")]
    Io(#[from] std::io::Error),
}

/// A scheduler in this process and its workers: in this process too ([`LocalCluster::start`]),
/// or as child processes ([`LocalCluster::start_processes`]). Dropping it stops them.
pub struct LocalCluster {
    scheduler: Option<Scheduler>,
    access: AccessFile,
    workers: Vec<tokio::task::JoinHandle<()>>,
    children: Vec<tokio::process::Child>,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for LocalCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCluster")
            .field("address", &self.access.address)
            .field("workers", &self.workers.len())
            .finish()
    }
}

impl LocalCluster {
    /// Starts a scheduler on loopback and the workers of `spec`, each with `registry`, and waits
    /// until every worker has joined. `spec` is a [`ClusterSpec`] (or a reference to one), a
    /// spec text such as `"A=2,B=1"` (two workers in pool A, one in B, one thread each) or a
    /// number of plain workers.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let cluster = drover::LocalCluster::start("A=2,B=1", drover::Registry::with_builtins()).await?;
    /// let client = cluster.client().await?;
    /// # Ok(()) }
    /// ```
    pub async fn start<S>(spec: S, registry: Registry) -> Result<LocalCluster, LocalError>
    where
        S: TryInto<ClusterSpec>,
        S::Error: std::fmt::Display,
    {
        let spec = &into_spec(spec)?;
        let mut cluster = LocalCluster::scheduler_only(spec).await?;
        let idle = Duration::from_secs(10);
        let access = cluster.access.clone();
        for (name, resources) in spec.workers() {
            let config = WorkerConfig {
                access: access.clone(),
                resources,
                nthreads: spec.nthreads.max(1),
                name: name.clone(),
                idle_timeout: idle,
                retire: None,
                lifespan_tasks: None,
                memory_limit: None,
            };
            let (tx, rx) = tokio::sync::oneshot::channel();
            let registry = registry.clone();
            let task_name = name.clone();
            cluster.workers.push(tokio::spawn(async move {
                if let Err(e) = run_worker_notify(config, registry, Some(tx)).await {
                    tracing::debug!(worker = %task_name, error = %e, "local worker stopped");
                }
            }));
            rx.await.map_err(|_| LocalError::Worker {
                name,
                error: "stopped before joining".into(),
            })?;
        }
        Ok(cluster)
    }

    /// Starts a scheduler on loopback and the workers of `spec` as child processes running
    /// `program worker --access-file F --name N --resources R --nthreads T` (a program that
    /// calls [`run_as_worker_if_asked`](crate::run_as_worker_if_asked) first, usually
    /// `std::env::current_exe()`), and waits until every worker has joined. Each process is its
    /// own worker with its own once-cells and state. Their stdout is passed through.
    pub async fn start_processes<S>(
        spec: S,
        program: &std::path::Path,
    ) -> Result<LocalCluster, LocalError>
    where
        S: TryInto<ClusterSpec>,
        S::Error: std::fmt::Display,
    {
        use tokio::io::AsyncBufReadExt;
        let spec = &into_spec(spec)?;
        let mut cluster = LocalCluster::scheduler_only(spec).await?;
        let access_path = cluster.dir.path().join("access.json");
        for (name, resources) in spec.workers() {
            let fail = |error: String| LocalError::Worker {
                name: name.clone(),
                error,
            };
            let mut child = tokio::process::Command::new(program)
                .arg("worker")
                .arg("--access-file")
                .arg(&access_path)
                .args([
                    "--name",
                    &name,
                    "--nthreads",
                    &spec.nthreads.max(1).to_string(),
                ])
                .args(["--resources", &resources.to_string()])
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| fail(format!("cannot start {}: {e}", program.display())))?;
            let stdout = child.stdout.take().expect("piped");
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            loop {
                match lines.next_line().await {
                    Ok(Some(line)) if line.starts_with(crate::worker_mode::JOINED_LINE) => break,
                    Ok(Some(line)) => println!("{line}"),
                    Ok(None) | Err(_) => {
                        let status = child.wait().await.ok();
                        return Err(fail(format!("exited before joining ({status:?})")));
                    }
                }
            }
            // Pass the rest of its output through.
            tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    println!("{line}");
                }
            });
            cluster.children.push(child);
        }
        Ok(cluster)
    }

    /// A scheduler on loopback with a fresh state dir (and the progress store `spec` names),
    /// and no workers yet.
    async fn scheduler_only(spec: &ClusterSpec) -> Result<LocalCluster, LocalError> {
        let dir = tempfile::tempdir()?;
        let progress_store = match &spec.progress_dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                Some((d.join("progress.redb"), drover_progress::Sharing::Processes))
            }
            None => None,
        };
        let idle = Duration::from_secs(10);
        let scheduler = Scheduler::start(SchedulerConfig {
            listen: "127.0.0.1:0".parse().expect("valid address"),
            state_dir: dir.path().to_owned(),
            advertise: None,
            idle_timeout: idle,
            core: Default::default(),
            max_output: drover_progress::DEFAULT_MAX_OUTPUT,
            progress_store,
            strict_permissions: false,
            dashboard: spec
                .dashboard
                .then(|| ("127.0.0.1:0".parse().expect("valid address"), true)),
        })
        .await?;
        let access = AccessFile::load(scheduler.access_path()).map_err(|e| LocalError::Worker {
            name: "-".into(),
            error: e.to_string(),
        })?;
        Ok(LocalCluster {
            scheduler: Some(scheduler),
            access,
            workers: Vec::new(),
            children: Vec::new(),
            dir,
        })
    }

    /// The cluster's access file contents (to connect other clients or workers).
    pub fn access(&self) -> &AccessFile {
        &self.access
    }

    /// A new client of this cluster.
    pub async fn client(&self) -> Result<Client, ClientError> {
        Client::connect_with(&self.access).await
    }

    /// Stops the scheduler and the workers.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.scheduler.take() {
            s.shutdown().await;
        }
        for w in self.workers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), w).await;
        }
        // Worker processes exit on the scheduler's shutdown (their exit hooks run).
        for mut c in self.children.drain(..) {
            if tokio::time::timeout(Duration::from_secs(10), c.wait())
                .await
                .is_err()
            {
                let _ = c.kill().await;
            }
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for w in &self.workers {
            w.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!(
            ClusterSpec::parse("3", 2).unwrap(),
            ClusterSpec::plain(3, 2)
        );
        let s = ClusterSpec::parse("A=2, B=1", 1).unwrap();
        assert_eq!(
            s.groups,
            [(Some("A".to_owned()), 2), (Some("B".to_owned()), 1)]
        );
        assert!(ClusterSpec::parse("A=x", 1)
            .unwrap_err()
            .contains("part \"A=x\""));
        assert!(ClusterSpec::parse("0", 1)
            .unwrap_err()
            .contains("no workers"));
        assert!(ClusterSpec::parse("a b=1", 1).is_err());
        let names: Vec<(String, String)> = ClusterSpec::parse("A=2,1", 1)
            .unwrap()
            .workers()
            .map(|(n, r)| (n, r.to_string()))
            .collect();
        let want = [
            ("local-A-0", "pool-A=1"),
            ("local-A-1", "pool-A=1"),
            ("local-plain-2", ""),
        ];
        assert_eq!(
            names,
            want.map(|(n, r)| (n.to_owned(), r.to_owned())).to_vec()
        );
    }
}
