//! `mef-netem`: the real-time userspace link emulator as a command, with options that read like
//! `tc netem`. It bridges two interfaces (normally two veth ends in a dedicated namespace):
//!
//! ```text
//! ip netns exec emu mef-netem --iface-a wan-a --iface-b wan-b \
//!     --delay 100ms --jitter 5ms --loss 1% --rate 100mbit --limit 1bdp
//! ```

#[cfg(target_os = "linux")]
mod cli {
    use std::process::ExitCode;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use clap::Parser;
    use sim_netem::realtime::{
        Direction, DirectionStats, Emulator, EmulatorConfig, disable_offloads,
    };
    use sim_netem::units::{Limit, parse_duration, parse_limit, parse_percent, parse_rate};
    use sim_netem::{LinkConfig, LossModel, MTU};

    /// Emulates a WAN link between two interfaces, in userspace, like `tc netem` + `tbf`.
    ///
    /// Frames received on interface A leave through B after the A→B impairments, and the
    /// other way round. Options apply to both directions; `--a-to-b-X` / `--b-to-a-X`
    /// override option X for one direction. Units: durations `100ms`, `250us`, `1s`; rates
    /// `100mbit`, `1gbit` (bits/s) or `12mbps` (bytes/s, as in tc); probabilities `1%` or
    /// `0.01`; limits `1bdp` (bandwidth × round trip, the round trip being the sum of both
    /// directions' delays), `500kb`, `1000p` (MTU-sized packets).
    ///
    /// Needs root (packet sockets). Turn offloads off on both interfaces and their peers
    /// (`ethtool -K dev rx off tx off tso off gso off gro off`; `--disable-offloads` does it
    /// for the two local ones). Stop with Ctrl-C; the counters are printed on exit.
    #[derive(Debug, Parser)]
    #[command(name = "mef-netem", version, verbatim_doc_comment)]
    pub struct Args {
        /// First interface (A).
        #[arg(long, env = "MEF_NETEM_IFACE_A")]
        pub iface_a: String,
        /// Second interface (B).
        #[arg(long, env = "MEF_NETEM_IFACE_B")]
        pub iface_b: String,
        #[command(flatten)]
        pub both: Impair,
        #[command(flatten)]
        pub a_to_b: AtoB,
        #[command(flatten)]
        pub b_to_a: BtoA,
        /// Seed of the random decisions (loss, jitter, ...); the same seed repeats them.
        #[arg(long, default_value_t = 0)]
        pub seed: u64,
        /// How long before a release deadline to stop sleeping and spin.
        #[arg(long, value_parser = parse_duration, default_value = "20us")]
        pub spin: Duration,
        /// SCHED_FIFO priority of the emulator threads (0 = normal scheduling).
        #[arg(long, default_value_t = 20)]
        pub rt_priority: u8,
        /// Largest IP packet forwarded; longer frames are counted and dropped.
        #[arg(long, default_value_t = MTU)]
        pub mtu: usize,
        /// Run `ethtool -K` on both interfaces to turn segmentation and checksum offloads off.
        #[arg(long)]
        pub disable_offloads: bool,
        /// Print the counters every this often (0 = only on exit).
        #[arg(long, value_parser = parse_duration, default_value = "0")]
        pub stats_every: Duration,
    }

    macro_rules! impair_group {
        ($name:ident, $prefix:literal, $what:literal) => {
            #[doc = concat!("Impairments ", $what, ".")]
            #[derive(Debug, Default, clap::Args)]
            pub struct $name {
                #[doc = concat!("One-way delay ", $what, ", e.g. 100ms.")]
                #[arg(id = concat!($prefix, "delay"), long = concat!($prefix, "delay"), value_parser = parse_duration)]
                pub delay: Option<Duration>,
                #[doc = concat!("Jitter: each packet's delay is delay ± U[0, jitter] ", $what, ".")]
                #[arg(id = concat!($prefix, "jitter"), long = concat!($prefix, "jitter"), value_parser = parse_duration)]
                pub jitter: Option<Duration>,
                #[doc = concat!("Random loss probability ", $what, ", e.g. 1%.")]
                #[arg(id = concat!($prefix, "loss"), long = concat!($prefix, "loss"), value_parser = parse_percent)]
                pub loss: Option<f64>,
                #[doc = concat!("Mean loss-burst length in packets ", $what, ": makes the loss Gilbert-Elliott.")]
                #[arg(id = concat!($prefix, "loss-burst"), long = concat!($prefix, "loss-burst"))]
                pub loss_burst: Option<f64>,
                #[doc = concat!("Link rate ", $what, ", e.g. 100mbit (default 100mbit).")]
                #[arg(id = concat!($prefix, "rate"), long = concat!($prefix, "rate"), value_parser = parse_rate)]
                pub rate: Option<u64>,
                #[doc = concat!("Drop-tail queue limit ", $what, ": 1bdp, 500kb, 1000p (default 1bdp).")]
                #[arg(id = concat!($prefix, "limit"), long = concat!($prefix, "limit"), value_parser = parse_limit)]
                pub limit: Option<Limit>,
                #[doc = concat!("Reordering probability ", $what, ": a picked packet is held back by --reorder-delay.")]
                #[arg(id = concat!($prefix, "reorder"), long = concat!($prefix, "reorder"), value_parser = parse_percent)]
                pub reorder: Option<f64>,
                #[doc = concat!("Extra delay of a reordered packet ", $what, " (default 1ms).")]
                #[arg(id = concat!($prefix, "reorder-delay"), long = concat!($prefix, "reorder-delay"), value_parser = parse_duration)]
                pub reorder_delay: Option<Duration>,
                #[doc = concat!("Duplication probability ", $what, ".")]
                #[arg(id = concat!($prefix, "duplicate"), long = concat!($prefix, "duplicate"), value_parser = parse_percent)]
                pub duplicate: Option<f64>,
                #[doc = concat!("Corruption probability ", $what, " (one bit of the IPv4 payload flipped).")]
                #[arg(id = concat!($prefix, "corrupt"), long = concat!($prefix, "corrupt"), value_parser = parse_percent)]
                pub corrupt: Option<f64>,
            }

            impl $name {
                fn fields(&self) -> Fields {
                    Fields {
                        delay: self.delay,
                        jitter: self.jitter,
                        loss: self.loss,
                        loss_burst: self.loss_burst,
                        rate: self.rate,
                        limit: self.limit,
                        reorder: self.reorder,
                        reorder_delay: self.reorder_delay,
                        duplicate: self.duplicate,
                        corrupt: self.corrupt,
                    }
                }
            }
        };
    }

    impair_group!(Impair, "", "in both directions");
    impair_group!(
        AtoB,
        "a-to-b-",
        "from A to B (overrides the two-way option)"
    );
    impair_group!(
        BtoA,
        "b-to-a-",
        "from B to A (overrides the two-way option)"
    );

    /// One direction's options after overrides.
    #[derive(Debug, Default, Clone, Copy)]
    struct Fields {
        delay: Option<Duration>,
        jitter: Option<Duration>,
        loss: Option<f64>,
        loss_burst: Option<f64>,
        rate: Option<u64>,
        limit: Option<Limit>,
        reorder: Option<f64>,
        reorder_delay: Option<Duration>,
        duplicate: Option<f64>,
        corrupt: Option<f64>,
    }

    impl Fields {
        fn or(self, base: Fields) -> Fields {
            Fields {
                delay: self.delay.or(base.delay),
                jitter: self.jitter.or(base.jitter),
                loss: self.loss.or(base.loss),
                loss_burst: self.loss_burst.or(base.loss_burst),
                rate: self.rate.or(base.rate),
                limit: self.limit.or(base.limit),
                reorder: self.reorder.or(base.reorder),
                reorder_delay: self.reorder_delay.or(base.reorder_delay),
                duplicate: self.duplicate.or(base.duplicate),
                corrupt: self.corrupt.or(base.corrupt),
            }
        }

        fn link(&self, prefix: &str, rtt: Duration, mtu: usize) -> Result<LinkConfig, String> {
            let rate = self.rate.unwrap_or(100_000_000);
            let delay = self.delay.unwrap_or(Duration::ZERO);
            let loss = match (self.loss, self.loss_burst) {
                (None | Some(0.0), _) => LossModel::None,
                (Some(p), None) => LossModel::Bernoulli(p),
                (Some(p), Some(b)) => LossModel::gilbert_elliott(p, b)
                    .map_err(|e| format!("--{prefix}loss-burst {b}: {e}"))?,
            };
            let limit = self.limit.unwrap_or(Limit::Bdp(1.0)).bytes(rate, rtt, mtu);
            let link = LinkConfig::new(rate, delay)
                .with_jitter(self.jitter.unwrap_or(Duration::ZERO))
                .with_loss(loss)
                .with_queue_limit(limit)
                .with_reorder(
                    self.reorder.unwrap_or(0.0),
                    self.reorder_delay.unwrap_or(Duration::from_millis(1)),
                )
                .with_duplicate(self.duplicate.unwrap_or(0.0))
                .with_corrupt(self.corrupt.unwrap_or(0.0));
            link.validate()
                .map_err(|e| format!("{prefix}options: {e}"))?;
            Ok(link)
        }
    }

    /// Builds the emulator configuration; errors name the option.
    pub fn config(args: &Args) -> Result<EmulatorConfig, String> {
        let both = args.both.fields();
        let ab = args.a_to_b.fields().or(both);
        let ba = args.b_to_a.fields().or(both);
        let rtt = ab.delay.unwrap_or(Duration::ZERO) + ba.delay.unwrap_or(Duration::ZERO);
        if args.mtu < 68 || args.mtu > 65_535 {
            return Err(format!("--mtu {}: must be in 68..=65535", args.mtu));
        }
        Ok(EmulatorConfig {
            a_to_b: ab.link("a-to-b-", rtt, args.mtu)?,
            b_to_a: ba.link("b-to-a-", rtt, args.mtu)?,
            seed: args.seed,
            spin: args.spin,
            mtu: args.mtu,
            rt_priority: (args.rt_priority > 0).then_some(args.rt_priority),
        })
    }

    fn print(label: &str, s: &DirectionStats) {
        println!(
            "{label}: received {} ({} B), forwarded {} ({} B), queue drops {}, lost {}, \
             duplicated {}, reordered {}, corrupted {}, oversize {}, send errors {}, \
             max lateness {} us",
            s.received,
            s.received_bytes,
            s.forwarded,
            s.forwarded_bytes,
            s.queue_drops,
            s.lost,
            s.duplicated,
            s.reordered,
            s.corrupted,
            s.oversize,
            s.send_errors,
            s.max_late_ns / 1000
        );
    }

    pub fn main() -> ExitCode {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .init();
        let args = Args::parse();
        let cfg = match config(&args) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("mef-netem: {e}");
                return ExitCode::from(2);
            }
        };
        if args.disable_offloads {
            for iface in [&args.iface_a, &args.iface_b] {
                if let Err(e) = disable_offloads(None, iface) {
                    eprintln!("mef-netem: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        if let Err(e) = ctrlc::set_handler(move || s.store(true, Ordering::SeqCst)) {
            eprintln!("mef-netem: cannot install the Ctrl-C handler: {e}");
            return ExitCode::FAILURE;
        }
        let emu = match Emulator::start(&args.iface_a, &args.iface_b, cfg) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("mef-netem: {e}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(
            a = %args.iface_a,
            b = %args.iface_b,
            a_to_b = ?emu.config().a_to_b,
            b_to_a = ?emu.config().b_to_a,
            "emulating"
        );
        let mut last = std::time::Instant::now();
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
            if !args.stats_every.is_zero() && last.elapsed() >= args.stats_every {
                last = std::time::Instant::now();
                print("a->b", &emu.stats(Direction::AtoB));
                print("b->a", &emu.stats(Direction::BtoA));
            }
        }
        let [ab, ba] = emu.stop();
        print("a->b", &ab);
        print("b->a", &ba);
        ExitCode::SUCCESS
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use clap::Parser;
    use sim_netem::LossModel;
    use std::time::Duration;

    use super::cli::{Args, config};

    fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
        let mut v = vec!["mef-netem", "--iface-a", "a", "--iface-b", "b"];
        v.extend_from_slice(extra);
        Args::try_parse_from(v)
    }

    #[test]
    fn both_directions_and_overrides() {
        let args = parse(&[
            "--delay",
            "100ms",
            "--loss",
            "1%",
            "--rate",
            "100mbit",
            "--limit",
            "1bdp",
            "--b-to-a-delay",
            "20ms",
            "--a-to-b-loss-burst",
            "3",
        ])
        .expect("parses");
        let cfg = config(&args).expect("valid");
        assert_eq!(cfg.a_to_b.delay, Duration::from_millis(100));
        assert_eq!(cfg.b_to_a.delay, Duration::from_millis(20));
        assert_eq!(cfg.b_to_a.loss, LossModel::Bernoulli(0.01));
        assert!(matches!(cfg.a_to_b.loss, LossModel::GilbertElliott { .. }));
        // 1 BDP of 100 Mbit/s over the 120 ms round trip.
        assert_eq!(cfg.a_to_b.queue_limit_bytes, 1_500_000);
        assert_eq!(cfg.a_to_b.rate_bps, 100_000_000);
    }

    #[test]
    fn errors_name_the_option() {
        let e = parse(&["--delay", "5parsecs"])
            .expect_err("bad unit")
            .to_string();
        assert!(e.contains("--delay") && e.contains("unknown unit"), "{e}");
        let e = parse(&["--a-to-b-loss", "120%"])
            .expect_err("bad")
            .to_string();
        assert!(
            e.contains("--a-to-b-loss") && e.contains("above 100%"),
            "{e}"
        );
        let args = parse(&["--loss", "60%", "--loss-burst", "0.5"]).expect("parses");
        let e = config(&args).expect_err("bad burst");
        assert!(e.contains("loss-burst"), "{e}");
    }
}

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    cli::main()
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("mef-netem needs Linux (AF_PACKET sockets)");
    std::process::exit(1);
}
