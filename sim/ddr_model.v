// sf_ddr_model: a fast AXI4 DDR model for simulation (Verilator and Icarus; not synthesisable).
//
// An AXI4 slave (64-bit data) over a memory array of MEM_BYTES bytes mapped at BASE_ADDR.
//
// Read channel
//   * up to MAX_OUTSTANDING read bursts wait in a queue besides the one being answered
//     (ARREADY = queue not full); they are answered in order, each with its ARID on RID;
//   * latency: if the AR handshake of a burst happens at clock edge N, its first beat is
//     presented so that the first R handshake can happen at edge N + READ_LATENCY (the same
//     definition as sim/ddr.py's LatencyAxiRamRead); the latency of queued bursts overlaps,
//     so back-to-back bursts stream at one beat per cycle with no bubble between bursts;
//   * RVALID/RDATA/RLAST/RRESP are registered and held while RREADY is low.
// Write channel (independent of the read channel)
//   * up to MAX_OUTSTANDING AW requests are queued; WREADY is high while an AW request is
//     queued and the B queue has room (the slave waits for AW before taking W, as AXI allows);
//   * byte strobes select the bytes written;
//   * the B response of a burst is presented WRITE_LATENCY cycles after the cycle its WLAST is
//     taken (0: BVALID on the next cycle); BID echoes AWID; responses in order.
// Bursts: INCR and FIXED, any ARSIZE/AWSIZE up to the bus width (the beat is the aligned 64-bit
//   word holding the address; a narrow master uses its byte lanes). WRAP bursts are answered
//   with SLVERR and do not touch memory. 4 KB crossing is not checked here (the DMA tests do).
// Address errors: a beat whose address lies outside [BASE_ADDR, BASE_ADDR + MEM_BYTES) is not
//   performed; it reads as 0 with RRESP = ERR_RESP (default DECERR), and a write burst with
//   any such beat answers BRESP = ERR_RESP.
// Backdoor (no per-word traffic through the simulator's API):
//   * load: when `load` is high at a rising edge, $readmemh(<load file>, mem) runs; the file
//     may hold `@<word index>` directives (word index = (address - BASE_ADDR) / 8) and
//     64-bit little-endian words as 16 hex digits. File name: plusarg +ddr_load=FILE, default
//     "ddr_load.hex" in the simulator's working directory.
//   * init: at time 0, if +ddr_init=FILE is given, that file is loaded the same way.
//   * dump: when `dump` is high at a rising edge, words dump_first..dump_last (word indices)
//     are written with $writememh to +ddr_dump=FILE, default "ddr_dump.hex".
//   * ZERO_INIT=1 clears the memory at time 0 (Icarus would otherwise start with X).
// Reset: `rst` (synchronous, active high) empties the queues; memory contents are kept.
// READ_LATENCY must be at least 2.
`timescale 1ns/1ps
`default_nettype none
/* verilator lint_off DECLFILENAME */

module sf_ddr_model #(
    parameter [31:0]  BASE_ADDR       = 32'h1000_0000,
    parameter integer MEM_BYTES       = 1 << 20,
    parameter integer READ_LATENCY    = 20,
    parameter integer WRITE_LATENCY   = 0,
    parameter integer MAX_OUTSTANDING = 8,
    parameter integer ID_WIDTH        = 1,
    parameter [1:0]   ERR_RESP        = 2'b11,
    parameter integer ZERO_INIT       = 1
) (
    input  wire                clk,
    input  wire                rst,
    // read address
    input  wire [ID_WIDTH-1:0] s_axi_arid,
    input  wire [31:0]         s_axi_araddr,
    input  wire [7:0]          s_axi_arlen,
    input  wire [2:0]          s_axi_arsize,
    input  wire [1:0]          s_axi_arburst,
    input  wire                s_axi_arvalid,
    output wire                s_axi_arready,
    // read data
    output reg  [ID_WIDTH-1:0] s_axi_rid,
    output reg  [63:0]         s_axi_rdata,
    output reg  [1:0]          s_axi_rresp,
    output reg                 s_axi_rlast,
    output reg                 s_axi_rvalid,
    input  wire                s_axi_rready,
    // write address
    input  wire [ID_WIDTH-1:0] s_axi_awid,
    input  wire [31:0]         s_axi_awaddr,
    /* verilator lint_off UNUSEDSIGNAL */
    input  wire [7:0]          s_axi_awlen,     // unused: a write burst ends at WLAST
    /* verilator lint_on UNUSEDSIGNAL */
    input  wire [2:0]          s_axi_awsize,
    input  wire [1:0]          s_axi_awburst,
    input  wire                s_axi_awvalid,
    output wire                s_axi_awready,
    // write data
    input  wire [63:0]         s_axi_wdata,
    input  wire [7:0]          s_axi_wstrb,
    input  wire                s_axi_wlast,
    input  wire                s_axi_wvalid,
    output wire                s_axi_wready,
    // write response
    output reg  [ID_WIDTH-1:0] s_axi_bid,
    output reg  [1:0]          s_axi_bresp,
    output reg                 s_axi_bvalid,
    input  wire                s_axi_bready,
    // backdoor
    input  wire                load,
    input  wire                dump,
    input  wire [31:0]         dump_first,
    input  wire [31:0]         dump_last,
    // statistics (free-running since reset)
    output reg  [63:0]         cycle,
    output reg  [31:0]         read_bursts,
    output reg  [31:0]         write_bursts
);
    localparam integer WORDS = MEM_BYTES / 8;
    localparam integer QW = (MAX_OUTSTANDING <= 2) ? 1 : $clog2(MAX_OUTSTANDING);
    localparam [1:0] OKAY = 2'b00, SLVERR = 2'b10;
    localparam [1:0] FIXED = 2'b00, INCR = 2'b01;
    // integer parameters sized to the registers they are compared with (plain Verilog-2005,
    // no SystemVerilog casts, so that Icarus reads the file as well)
    /* verilator lint_off WIDTH */
    localparam [63:0] READ_WAIT = READ_LATENCY - 1;
    localparam [63:0] WRITE_WAIT = WRITE_LATENCY;
    localparam [QW-1:0] LASTP = MAX_OUTSTANDING - 1;   // last queue slot
    localparam [QW:0] FULL = MAX_OUTSTANDING;          // entries in a full queue
    /* verilator lint_on WIDTH */

    reg [63:0] mem [0:WORDS-1];

    // ------------------------------------------------------------------ backdoor
    reg [1023:0] load_file, dump_file, init_file;
    integer k;
    initial begin
        if (ZERO_INIT != 0)
            for (k = 0; k < WORDS; k = k + 1) mem[k] = 64'd0;
        if (!$value$plusargs("ddr_load=%s", load_file)) load_file = "ddr_load.hex";
        if (!$value$plusargs("ddr_dump=%s", dump_file)) dump_file = "ddr_dump.hex";
        if ($value$plusargs("ddr_init=%s", init_file)) $readmemh(init_file, mem);
    end

    // addresses -> word index, range check
    function automatic in_range(input [31:0] a);
        in_range = (a >= BASE_ADDR) && ((a - BASE_ADDR) < MEM_BYTES);
    endfunction
    function automatic [31:0] word_of(input [31:0] a);
        word_of = (a - BASE_ADDR) >> 3;
    endfunction
    function automatic [QW-1:0] inc(input [QW-1:0] p);
        inc = (p == LASTP) ? {QW{1'b0}} : p + 1'b1;
    endfunction
    function automatic [31:0] next_addr(input [31:0] a, input [2:0] size, input [1:0] burst);
        next_addr = (burst == FIXED) ? a : ((a >> size) + 32'd1) << size;
    endfunction

    always @(posedge clk) begin
        if (rst) cycle <= 64'd0;
        else cycle <= cycle + 64'd1;
    end

    // ------------------------------------------------------------------ read channel
    reg [ID_WIDTH-1:0] arq_id    [0:MAX_OUTSTANDING-1];
    reg [31:0]         arq_addr  [0:MAX_OUTSTANDING-1];
    reg [7:0]          arq_len   [0:MAX_OUTSTANDING-1];
    reg [2:0]          arq_size  [0:MAX_OUTSTANDING-1];
    reg [1:0]          arq_burst [0:MAX_OUTSTANDING-1];
    reg [63:0]         arq_ready [0:MAX_OUTSTANDING-1];   // cycle at which beat 0 may be loaded
    reg [QW-1:0] arq_wp, arq_rp;
    reg [QW:0]   arq_n;

    // burst being answered
    reg              r_active;
    reg [ID_WIDTH-1:0] r_id;
    reg [31:0]       r_addr;
    reg [7:0]        r_left;          // beats after the one being loaded
    reg [2:0]        r_size;
    reg [1:0]        r_burst;

    assign s_axi_arready = !rst && (arq_n != FULL);
    wire ar_take = s_axi_arvalid && s_axi_arready;
    wire r_free = !s_axi_rvalid || s_axi_rready;              // output register can be loaded
    wire r_cont = r_active && r_free;                          // next beat of current burst
    wire r_start = !r_active && r_free && (arq_n != 0) && (cycle >= arq_ready[arq_rp]);
    wire arq_pop = r_start;

    // one beat into the output register
    task automatic present(input [ID_WIDTH-1:0] id, input [31:0] a, input [1:0] burst,
                           input last);
        begin
            s_axi_rvalid <= 1'b1;
            s_axi_rid <= id;
            s_axi_rlast <= last;
            if (burst != FIXED && burst != INCR) begin
                s_axi_rresp <= SLVERR;
                s_axi_rdata <= 64'd0;
            end else if (in_range(a)) begin
                s_axi_rresp <= OKAY;
                s_axi_rdata <= mem[word_of(a)];
            end else begin
                s_axi_rresp <= ERR_RESP;
                s_axi_rdata <= 64'd0;
            end
        end
    endtask

    always @(posedge clk) begin
        if (rst) begin
            arq_wp <= 0; arq_rp <= 0; arq_n <= 0;
            r_active <= 1'b0;
            s_axi_rvalid <= 1'b0;
            s_axi_rlast <= 1'b0;
            read_bursts <= 32'd0;
        end else begin
            if (ar_take) begin
                arq_id[arq_wp] <= s_axi_arid;
                arq_addr[arq_wp] <= s_axi_araddr;
                arq_len[arq_wp] <= s_axi_arlen;
                arq_size[arq_wp] <= s_axi_arsize;
                arq_burst[arq_wp] <= s_axi_arburst;
                arq_ready[arq_wp] <= cycle + READ_WAIT;
                arq_wp <= inc(arq_wp);
            end
            if (arq_pop) arq_rp <= inc(arq_rp);
            arq_n <= arq_n + {{QW{1'b0}}, ar_take} - {{QW{1'b0}}, arq_pop};

            if (r_cont) begin
                present(r_id, r_addr, r_burst, r_left == 8'd0);
                r_addr <= next_addr(r_addr, r_size, r_burst);
                r_left <= r_left - 8'd1;
                r_active <= r_left != 8'd0;
            end else if (r_start) begin
                present(arq_id[arq_rp], arq_addr[arq_rp], arq_burst[arq_rp],
                        arq_len[arq_rp] == 8'd0);
                r_id <= arq_id[arq_rp];
                r_addr <= next_addr(arq_addr[arq_rp], arq_size[arq_rp], arq_burst[arq_rp]);
                r_size <= arq_size[arq_rp];
                r_burst <= arq_burst[arq_rp];
                r_left <= arq_len[arq_rp] - 8'd1;
                r_active <= arq_len[arq_rp] != 8'd0;
                read_bursts <= read_bursts + 32'd1;
            end else if (s_axi_rready) begin
                s_axi_rvalid <= 1'b0;
            end
        end
    end

    // ------------------------------------------------------------------ write channel
    reg [ID_WIDTH-1:0] awq_id    [0:MAX_OUTSTANDING-1];
    reg [31:0]         awq_addr  [0:MAX_OUTSTANDING-1];
    reg [2:0]          awq_size  [0:MAX_OUTSTANDING-1];
    reg [1:0]          awq_burst [0:MAX_OUTSTANDING-1];
    reg [QW-1:0] awq_wp, awq_rp;
    reg [QW:0]   awq_n;

    reg [ID_WIDTH-1:0] bq_id    [0:MAX_OUTSTANDING-1];
    reg [1:0]          bq_resp  [0:MAX_OUTSTANDING-1];
    reg [63:0]         bq_ready [0:MAX_OUTSTANDING-1];
    reg [QW-1:0] bq_wp, bq_rp;
    reg [QW:0]   bq_n;

    reg        w_started;        // a beat of the head AW burst has been taken
    reg [31:0] w_addr;
    reg [1:0]  w_err;            // worst response so far in the burst

    assign s_axi_awready = !rst && (awq_n != FULL);
    assign s_axi_wready = !rst && (awq_n != 0) && (bq_n != FULL);
    wire aw_take = s_axi_awvalid && s_axi_awready;
    wire w_take = s_axi_wvalid && s_axi_wready;
    wire [31:0] w_cur = w_started ? w_addr : awq_addr[awq_rp];
    wire [1:0] w_burst = awq_burst[awq_rp];
    wire w_bad_burst = (w_burst != FIXED) && (w_burst != INCR);
    wire [1:0] w_beat_resp = w_bad_burst ? SLVERR : (in_range(w_cur) ? OKAY : ERR_RESP);
    wire [1:0] w_prev_err = w_started ? w_err : OKAY;
    wire [1:0] w_burst_resp = (w_prev_err != OKAY) ? w_prev_err : w_beat_resp;
    wire b_pop = s_axi_bvalid && s_axi_bready;
    wire b_load = (!s_axi_bvalid || s_axi_bready) && (bq_n != 0) && (cycle >= bq_ready[bq_rp]);

    wire [63:0] w_mask = {{8{s_axi_wstrb[7]}}, {8{s_axi_wstrb[6]}}, {8{s_axi_wstrb[5]}},
                          {8{s_axi_wstrb[4]}}, {8{s_axi_wstrb[3]}}, {8{s_axi_wstrb[2]}},
                          {8{s_axi_wstrb[1]}}, {8{s_axi_wstrb[0]}}};
    always @(posedge clk) begin
        if (rst) begin
            awq_wp <= 0; awq_rp <= 0; awq_n <= 0;
            bq_wp <= 0; bq_rp <= 0; bq_n <= 0;
            w_started <= 1'b0;
            s_axi_bvalid <= 1'b0;
            write_bursts <= 32'd0;
        end else begin
            if (aw_take) begin
                awq_id[awq_wp] <= s_axi_awid;
                awq_addr[awq_wp] <= s_axi_awaddr;
                awq_size[awq_wp] <= s_axi_awsize;
                awq_burst[awq_wp] <= s_axi_awburst;
                awq_wp <= inc(awq_wp);
            end
            if (w_take) begin
                if (!w_bad_burst && in_range(w_cur))
                    mem[word_of(w_cur)] <= (mem[word_of(w_cur)] & ~w_mask) | (s_axi_wdata & w_mask);
                w_addr <= next_addr(w_cur, awq_size[awq_rp], w_burst);
                w_err <= w_burst_resp;
                w_started <= !s_axi_wlast;
                if (s_axi_wlast) begin
                    bq_id[bq_wp] <= awq_id[awq_rp];
                    bq_resp[bq_wp] <= w_burst_resp;
                    bq_ready[bq_wp] <= cycle + WRITE_WAIT;
                    bq_wp <= inc(bq_wp);
                    awq_rp <= inc(awq_rp);
                    write_bursts <= write_bursts + 32'd1;
                end
            end
            awq_n <= awq_n + {{QW{1'b0}}, aw_take} - {{QW{1'b0}}, w_take && s_axi_wlast};
            bq_n <= bq_n + {{QW{1'b0}}, w_take && s_axi_wlast} - {{QW{1'b0}}, b_load};

            if (b_load) begin
                s_axi_bvalid <= 1'b1;
                s_axi_bid <= bq_id[bq_rp];
                s_axi_bresp <= bq_resp[bq_rp];
                bq_rp <= inc(bq_rp);
            end else if (b_pop) begin
                s_axi_bvalid <= 1'b0;
            end
        end
    end

    // ------------------------------------------------------------------ backdoor
    always @(posedge clk) begin
        if (load) $readmemh(load_file, mem);
        if (dump) $writememh(dump_file, mem, dump_first, dump_last);
    end
endmodule

`default_nettype wire
