//! The floor under the plugin-call figures: the same `bench-scorer`
//! component called through wasmtime directly, with no Rapport code at all
//! (no host state, limits, metrics, logs or result checks; WASI with an
//! empty context; no fuel; the pooling allocator set up as
//! `rapport::runtime` sets it up), called synchronously (`call`: no fiber,
//! WASI linked with sync host functions) and asynchronously (`call_async`
//! on a fiber, WASI linked async: what Rapport needs, since its host
//! imports, epoch yields and fuel yields are async).
//!
//! This is the one place outside `host/src/runtime` that names wasmtime,
//! on purpose: it measures wasmtime itself, so that the summary can say how
//! much of a call is Rapport's and how much no change in Rapport can remove.

use rapport::runtime::contract::inputs::CustomerHistory;
use rapport::runtime::contract::scoring::CustomerScore;
use rapport::runtime::contract::types::PluginError;
use wasmtime::component::{Component, ComponentExportIndex, InstancePre, Linker, ResourceTable, TypedFunc};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

struct State {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

type Score = TypedFunc<(&'static CustomerHistory,), (Result<CustomerScore, PluginError>,)>;

/// `bench-scorer` on a bare engine, called sync or async.
pub struct Raw {
    engine: Engine,
    pre: InstancePre<State>,
    score: ComponentExportIndex,
    is_async: bool,
    tokio: tokio::runtime::Runtime,
}

impl Raw {
    pub fn new(wasm: &[u8], is_async: bool) -> Raw {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(16)
            .max_memory_size(256 << 20)
            .linear_memory_keep_resident(2 << 20)
            .table_keep_resident(64 << 10)
            .pagemap_scan(Enabled::Auto);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).expect("engine");
        let component = Component::new(&engine, wasm).expect("compile bench-scorer");
        let mut linker: Linker<State> = Linker::new(&engine);
        if is_async {
            wasmtime_wasi::p2::add_to_linker_async(&mut linker).expect("link WASI");
        } else {
            wasmtime_wasi::p2::add_to_linker_sync(&mut linker).expect("link WASI");
        }
        let pre = linker.instantiate_pre(&component).expect("pre-instantiate");
        let (_, scoring) = component
            .get_export(None, "rapport:crm/scoring@0.1.0")
            .expect("scoring export");
        let (_, score) = component.get_export(Some(&scoring), "score").expect("score export");
        Raw {
            engine,
            pre,
            score,
            is_async,
            tokio: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio"),
        }
    }

    fn store(&self) -> Store<State> {
        let mut store = Store::new(
            &self.engine,
            State {
                wasi: WasiCtx::builder().build(),
                table: ResourceTable::new(),
            },
        );
        store.set_epoch_deadline(u64::MAX / 2);
        store
    }

    fn instantiate(&self, store: &mut Store<State>) -> Score {
        let instance = if self.is_async {
            self.tokio.block_on(self.pre.instantiate_async(&mut *store))
        } else {
            self.pre.instantiate(&mut *store)
        }
        .expect("instantiate");
        instance.get_typed_func(&mut *store, self.score).expect("score type")
    }

    fn call(&self, store: &mut Store<State>, score: &Score, input: &'static CustomerHistory) -> f64 {
        let (result,) = if self.is_async {
            self.tokio.block_on(score.call_async(&mut *store, (input,)))
        } else {
            score.call(&mut *store, (input,))
        }
        .expect("call");
        result.expect("score").value
    }

    /// `calls` calls on one instance.
    pub fn warm(&self, input: &'static CustomerHistory, calls: u64) -> f64 {
        let mut store = self.store();
        let score = self.instantiate(&mut store);
        let mut v = 0.0;
        for _ in 0..calls {
            v = self.call(&mut store, &score, input);
        }
        v
    }

    /// New store, instantiate, one call, drop.
    pub fn fresh(&self, input: &'static CustomerHistory) -> f64 {
        let mut store = self.store();
        let score = self.instantiate(&mut store);
        self.call(&mut store, &score, input)
    }
}
