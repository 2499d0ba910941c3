//! The Kubernetes API stand-in of the end-to-end tests (`kdbg_testkit::apiserver`, the same
//! code) as a process of its own, for benchmark scripts: it serves the pods given on the
//! command line, writes a kubeconfig for itself, prints the kubeconfig's path, and serves
//! until killed.
//!
//! `apiserver DIR NAMESPACE/POD=CONTAINER_ID_URL...` (e.g. `bench/web=docker://abc`): each
//! pod Running on node `stand-in-node` (hostIP 127.0.0.1) with one container `app`. The node's
//! agent pod is there too, as `deploy/` labels it, so the plugin finds the agent the way it
//! does in a cluster: a port-forward to it, which the stand-in carries to 127.0.0.1.
//!
//! For agents that authenticate their callers (`auth.mode: kubernetes`): the kubeconfig's
//! token is user `tester`'s, who may do anything (RBAC's `*`, as `cluster-admin`), and a second
//! kubeconfig, whose path is printed on the second line, is the agent's service account's,
//! which may create the TokenReviews and SubjectAccessReviews the agent asks.

use kdbg_testkit::apiserver::access::AGENT_TOKEN;
use kdbg_testkit::apiserver::{ApiServer, agent_pod, running_pod};

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: apiserver DIR NAMESPACE/POD=CONTAINER_ID_URL...";
    let dir = std::path::PathBuf::from(args.next().expect(usage));
    let api = ApiServer::start();
    api.add_pod(agent_pod("stand-in-node", "127.0.0.1", true));
    let mut namespace = "default".to_owned();
    for pod in args {
        let (place, container) = pod.split_once('=').expect(usage);
        let (ns, name) = place.split_once('/').expect(usage);
        api.add_pod(running_pod(ns, name, &[("app", container, true)]));
        namespace = ns.to_owned();
    }
    {
        let mut table = api.access.lock().unwrap();
        table.user("stand-in-token", "tester", &["system:authenticated"]);
        table.grant("tester", "*", "*", "", "");
    }
    let kubeconfig = api.kubeconfig(&dir, &namespace);
    let agent_kubeconfig = api.kubeconfig_with_token(&dir, "agent.kubeconfig", AGENT_TOKEN);
    println!("{}", kubeconfig.display());
    println!("{}", agent_kubeconfig.display());
    loop {
        std::thread::park();
    }
}
