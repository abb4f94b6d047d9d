"""Problem model, cost model and solvers land here with the splitter issue;
this package stays free of grpc and redis (import-linter contract)."""
